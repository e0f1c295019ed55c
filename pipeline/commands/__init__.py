"""Commands that are not stages: predict-image and the Kaggle round trip."""
