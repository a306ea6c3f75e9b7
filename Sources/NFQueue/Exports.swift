// The queue's API throws `SystemCallError` and returns `IOResult`, and its users stamp packets
// with the same clocks: they see SystemCalls' types through this module, as its own.
@_exported import SystemCalls
