"""Watching a deployed model: the baseline written at training time, SageMaker data capture files, drift
against the baseline, the Model Monitor bring-your-own-container contract and the drift report.

numpy and Pillow only: the monitoring job runs in byoc-serve:cpu, which has no torch.
"""
