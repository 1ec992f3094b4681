"""The data package: loaders, the built-in corpus, cleaning, split and the data report."""
