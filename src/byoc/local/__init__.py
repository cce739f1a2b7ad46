"""Running things on this machine: SageMaker Runtime's InvokeEndpoint on 127.0.0.1 (runtime),
the demo dataset (demo_data) and the demo web page with its development server (web)."""
