"""The sender: a worker process (run several) that turns send jobs into mail."""
