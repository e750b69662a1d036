"""Built-in node types, one module per type (the module name is the type name)."""
