"""The stream runtime: runs a stream version's graph over batches of records.

`base` is the contract between the engine and the functions; `functions/` holds one
module per function family; `engine` compiles a graph and runs a batch through it.
"""
