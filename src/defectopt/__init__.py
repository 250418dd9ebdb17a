"""defectopt: make large defect-screening image classifiers deployable."""

__version__ = "0.1.0"
