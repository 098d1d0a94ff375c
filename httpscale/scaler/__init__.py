"""KEDA external scaler: gRPC service, collection from interceptors, instant activation.

See docs/scaler.md. `app.Scaler` is the entry point; `cli.scaler_command` the command.
"""
