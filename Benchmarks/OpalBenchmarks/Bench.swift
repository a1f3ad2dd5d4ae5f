import OpalCore
