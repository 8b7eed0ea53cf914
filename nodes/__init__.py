"""ComfyUI nodes of the Magic-Boost pack (thin wrappers over ``magicboost_core``)."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
