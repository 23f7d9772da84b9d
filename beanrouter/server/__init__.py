"""The bundled beanstalkd-compatible server: a pure engine, a dispatcher and an asyncio shell."""
