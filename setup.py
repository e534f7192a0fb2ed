"""Installs AutoMoE: the four packages and the ``automoe`` console script."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="automoe",
    version="0.1.0",
    description=(
        "Neural architecture search for dense and Mixture-of-Experts Transformers "
        "(weight-sharing SuperNet + Ray-distributed evolutionary search)"
    ),
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["automoe*", "search_spaces*", "supernet*", "evolution*"]),
    package_data={"search_spaces": ["*.yaml", "baselines/*.json"]},
    install_requires=[
        "torch>=2.2,<3",
        "ray[tune]>=2.9,<3",
        "numpy>=1.24",
        "pandas>=2.0",
        "matplotlib>=3.7",
        "fvcore>=0.1.5.post20221221",
        "sacrebleu>=2.3,<3",
        "sentencepiece>=0.1.99",
        "safetensors>=0.4",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "scipy>=1.10",
    ],
    extras_require={
        # ONNX export (automoe onnx, automoe export --onnx) and ONNX Runtime
        "onnx": ["onnx>=1.17,<2", "onnxscript>=0.3,<1", "onnxruntime>=1.20,<2"],
        "dev": ["pytest>=7.4", "hypothesis>=6.80", "ruff>=0.4", "mypy>=1.8",
                "onnx>=1.17,<2", "onnxscript>=0.3,<1", "onnxruntime>=1.20,<2",
                # tests/test_pareto_vs_pymoo.py: sorting, crowding and hypervolume as oracles
                "pymoo>=0.6.2,<0.7"],
        # the search benchmarks only (scripts/bench_pymoo.py, scripts/bench_nasbench_graph.py)
        "bench": ["pymoo>=0.6.2,<0.7", "moocore>=0.3,<1", "nas-bench-graph>=1.4,<2"],
    },
    entry_points={"console_scripts": ["automoe=automoe.cli:main"]},
)
