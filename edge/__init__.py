"""The NATS edge: connections, publishing, the log reader, credentials."""
