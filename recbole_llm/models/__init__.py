"""The plugin's models, by family. Each is one file, one YAML in properties/model, one registry line."""
