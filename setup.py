"""The package list: unet3d and its subpackages, plus the top-level configs/
folder installed as unet3d.configs (unet3d.recipes finds it in both places).

Everything else is in pyproject.toml; pyproject alone cannot rename a folder
while finding packages.
"""

import setuptools

setuptools.setup(
    packages=(setuptools.find_packages(include=['unet3d', 'unet3d.*']) +
              ['unet3d.configs']),
    package_dir={'unet3d.configs': 'configs'})
