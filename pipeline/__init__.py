"""A Kaggle Digit Recognizer pipeline whose 784-256-10 network is written in NumPy."""
# First, before any other module is read: the code a run executes is the code it records.
from pipeline import sources as _sources  # noqa: F401
