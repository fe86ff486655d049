"""saeforge's Python tools: shards from Hugging Face causal LMs, and downstream evaluation."""


class ToolError(Exception):
    """Bad input (model, hook, text, SAE): the tool prints one line and exits 2."""
