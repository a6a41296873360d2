from setuptools import find_packages, setup

setup(
    name="vov3d",
    version="0.1.0",
    description="Efficient video recognition (VoV3D, X3D, CSN, SEVNet, CoX3D) in the PySlowFast line",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["vov3d", "vov3d.*"]),
    # torch is bounded above so an installed 2.13.0 always satisfies it and pip never
    # fetches a newer (CUDA) build on its own.
    install_requires=[
        "torch>=2.1,<2.14",
        "numpy>=1.24",
        "av>=11",
        "opencv-python-headless>=4.8",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",
        "yacs>=0.1.8",
        "PyYAML>=5.4",
        "simplejson",
        "tensorboard",
        "matplotlib",
        "psutil",
        "tqdm",
        "pillow",
    ],
    # export: ONNX files (torch's exporter needs onnxscript) and ONNX Runtime to check and run
    # them; TorchScript and torch.export need nothing beyond torch.
    # cluster: tools/submit_net.py (SLURM through submitit); nothing else imports it.
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"], "gpu": ["torchvision"],
                    "export": ["onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.2"],
                    "cluster": ["submitit>=1.5"]},
)
