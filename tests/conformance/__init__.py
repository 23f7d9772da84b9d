"""Differential conformance tests: the bundled server against the real beanstalkd 1.12."""
