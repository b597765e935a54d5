"""The engine: how the model is run. batching.py cuts texts into batches and lays a packed batch out in one row;
matmul.py holds the linear layers' kernels and the row blocks that make a text's result independent of its batch;
devices.py names devices and dtypes."""
