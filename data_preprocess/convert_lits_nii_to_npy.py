"""`unet3d-convert lits_nii_to_npy` from a checkout, with the same flags
(unet3d/cli/convert/lits_nii_to_npy.py)."""

from unet3d.cli.convert import lits_nii_to_npy

if __name__ == '__main__':
  lits_nii_to_npy.main()
