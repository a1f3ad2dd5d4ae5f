import OpalCore

// The recurrent op set (LSTM / GRU cells, embedding gather / scatter) lives in OpenCLBackend+Recurrent.swift.
extension OpenCLBackend: RecurrentBackend {}
