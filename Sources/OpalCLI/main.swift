print("opal")
