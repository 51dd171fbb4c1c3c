"""Classification distillation (KD, FitNet, DKD, each +SRW) on CIFAR and ImageNet.

``models``: mdistiller's architectures with its state-dict layout; ``data``: CIFAR readers
(python and binary formats, folders or archives), ImageNet folders, scikit-learn digits;
``metrics``: top-k accuracy and Table 4's tail bands.
"""
