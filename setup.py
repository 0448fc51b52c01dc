from setuptools import find_packages, setup

setup(
    name="moovitamix_assets",
    version="0.1.0",
    description="Daily ingestion, quality checks and recommendations for the Moovitamix music app, on Dagster and DuckDB.",
    packages=find_packages(exclude=["moovitamix_assets_tests*", "benchmarks*"]),
    package_data={"moovitamix_assets": ["*/sql/*.sql", "catalogue.json"]},
    python_requires=">=3.10",
    install_requires=[
        "dagster>=1.13,<1.14",
        "dagster-duckdb>=0.29,<0.30",
        "duckdb>=1.2",
        "pandas>=2.2,<3",
        "pyarrow>=15",
        "requests>=2.31",
        "orjson>=3.9",
        "urllib3>=2",
        "numpy>=1.26",
        "scipy>=1.11",
        "implicit>=0.7.2,<0.8",
        "threadpoolctl>=3.1",
        "matplotlib>=3.8",
        "psutil>=5.9",  # the recovery of dead runs checks their worker processes
    ],
    extras_require={
        # The emulator of the upstream API (moovitamix_api) and everything the tests and
        # `make dev` need; the code location itself never imports these.
        "dev": [
            "dagster-webserver>=1.13,<1.14",
            "fastapi>=0.110",
            "uvicorn>=0.29",
            "pytest>=8",
        ],
        # The recommendations service (moovitamix_serving, `moovitamix-recs`): its own process,
        # never imported by the code location. uvloop and httptools carry its request rate.
        "serving": [
            "fastapi>=0.110",
            "uvicorn>=0.29",
            "uvloop>=0.19",
            "httptools>=0.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "moovitamix-api=moovitamix_api.cli:main",
            "moovitamix-recs=moovitamix_serving.cli:main",
        ]
    },
)
