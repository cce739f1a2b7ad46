"""The images' ENTRYPOINT: `train` and `serve` as SageMaker invokes them, `monitor` as Model Monitor runs
a bring-your-own-container job (byoc.monitor.processing), anything else exec'd."""

from __future__ import annotations

import os
import sys


def main() -> None:
    args = sys.argv[1:] or ["train"]
    command, rest = args[0], args[1:]
    if command == "train":
        # sagemaker-training parses /opt/ml, runs SAGEMAKER_TRAINING_MODULE (byoc.training.launch:main),
        # writes the failure file for ClientError and sets the exit code.
        from sagemaker_training.cli import train

        from byoc.training import contract

        contract.prepare()
        sys.argv = ["train", *rest]
        train.main()
        return
    if command == "serve":
        from byoc.serve.server import main as serve_main

        sys.argv = ["serve", *rest]
        sys.exit(serve_main())
    if command == "monitor":
        from byoc.monitor.processing import main as monitor_main

        sys.exit(monitor_main())
    os.execvp(command, args)


if __name__ == "__main__":
    main()
