import os

# nothing is fetched: the hub libraries answer from local files or fail at once
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
