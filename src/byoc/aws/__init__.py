"""Operate byoc on AWS: one module per concern (boto3 only; never torch)."""
