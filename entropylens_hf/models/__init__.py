"""Getting models: the bundled model (:mod:`.bundled`), loading by name, folder or GGUF file
(:mod:`.loading`), and fetching registered real models from the package registry (:mod:`.fetch`)."""

from .bundled import default_model, default_model_path, demo_prompts_path

__all__ = ["default_model", "default_model_path", "demo_prompts_path"]
