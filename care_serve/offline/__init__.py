"""The offline side: training, evaluation and datasets. The server never imports it."""
