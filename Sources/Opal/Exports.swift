@_exported import OpalCore
