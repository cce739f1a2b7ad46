"""The training side, in the order a job runs it: contract (/opt/ml, SM_*, typed settings) ->
launch (one process, or torchrun across hosts and GPUs) -> train (the story) over data, model,
speed, checkpoint, distributed, loop and monitor. Importing this package loads nothing: the AWS
commands read `contract` without torch."""
