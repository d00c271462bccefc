"""The model and its data: config, layers, recurrent core, training, shards, tokenizer, corpus, ingest."""
