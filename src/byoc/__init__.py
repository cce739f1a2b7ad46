"""Train and serve PyTorch image classifiers on Amazon SageMaker with your own containers."""

__version__ = "0.1.0"
