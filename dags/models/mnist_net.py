"""The MNIST network of PyTorch's ``mnist_hogwild`` example (the docker-compose seed's model), as a
condorml model file: ``--model dags/models/mnist_net.py:Net`` (README: "Your own model").

condorml's contract: the class subclasses ``torch.nn.Module``, is built as ``Net(num_classes=N)``
and takes RGB batches (N, 3, S, S) normalised with ``input_mean`` / ``input_std``. MNIST's
greyscale digits arrive with their grey value in all three channels, so the first convolution
takes 3 channels instead of the example's 1; the rest is the example's, sized for 28 pixels.
"""

import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """Two convolutions and two linear layers, with dropout (28 x 28 inputs)."""

    # MNIST's mean and standard deviation (the example's transforms.Normalize((0.1307,), (0.3081,)))
    input_mean = (0.1307, 0.1307, 0.1307)
    input_std = (0.3081, 0.3081, 0.3081)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)  # logits: condorml's loss and softmax take them as they are
