"""Real-MRI examples on the MNI152 template (python -m unet3d.examples.NAME):
walkthrough_mni152 trains and evaluates one recipe."""
