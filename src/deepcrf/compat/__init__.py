"""Drop-in replacements for other dense-CRF libraries' APIs."""
