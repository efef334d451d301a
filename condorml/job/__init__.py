"""What runs inside a job on an execute point: read the data, decode images, build the model,
train with checkpoints, predict. The only modules that import PyTorch."""
