"""A Kaggle Digit Recognizer pipeline whose 784-256-10 network is written in NumPy."""
