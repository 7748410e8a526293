"""Framework adapters (Lightning, Hugging Face, accelerate), installed as `autoscout_plugin.integrations`."""
