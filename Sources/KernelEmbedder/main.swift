print("KernelEmbedder placeholder")
