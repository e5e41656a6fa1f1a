"""Sets of files downloaded as one: a ComfyUI workflow's models, a Hugging Face folder, a CivitAI version."""
