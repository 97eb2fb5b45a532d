"""The local stack: the Lambda handlers behind an HTTP server that speaks API Gateway's events."""
