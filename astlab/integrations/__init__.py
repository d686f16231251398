"""Shells that connect astlab to other tools and services: Lightning, TensorBoard, Kaggle kernels, the Hugging Face Hub."""
