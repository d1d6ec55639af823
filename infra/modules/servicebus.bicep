// Service Bus: the onboarding, steps and notifications queues (docs/messaging.md).
// The queue properties agree with the code and host.json (tests/unit/test_infra.py checks):
//   lockDuration        = VENDING_BUS_LOCK_S (60 s); a step's lease is half of it
//   maxDeliveryCount    = VENDING_BUS_MAX_DELIVERIES (10); then the message is dead-lettered. It counts
//                         crashes, and the end of a spent retry budget (the trigger raises); failed
//                         handlings are retried later as scheduled copies (VENDING_MESSAGE_*)
//   duplicate detection = VENDING_BUS_DUPLICATE_WINDOW_S (600 s), keyed on the engine's
//                         deterministic message ids (<request>/<step>/<attempt>, retry copies
//                         <id>/retry-<n>)
param name string
param location string
param tags object
param queueNames array = ['onboarding', 'steps', 'notifications']
param lockDuration string = 'PT1M'
param maxDeliveryCount int = 10
param duplicateDetectionWindow string = 'PT10M'

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  // Standard: duplicate detection needs it (Basic has none).
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for queue in queueNames: {
  parent: namespace
  name: queue
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    enableBatchedOperations: true
  }
}]

output name string = namespace.name
output id string = namespace.id
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
