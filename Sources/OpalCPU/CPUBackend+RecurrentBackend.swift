import OpalCore

// The recurrent op set (LSTM / GRU cells, embedding gather / scatter) lives in Recurrent.swift.
extension CPUBackend: RecurrentBackend {}
