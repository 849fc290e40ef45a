"""unet3d: 3D U-Net and UNet 3+ segmentation on TensorFlow 2 / Keras 3.

Importing the package stays cheap: no TensorFlow import here (the version
is read by the build and by `unet3d --version`).
"""

__version__ = '0.3.0'
