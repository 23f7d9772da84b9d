"""Router tests: pure policy tests and tests against real beanstalkd and bundled-server shards."""
