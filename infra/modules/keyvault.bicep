// Key Vault for the chat secrets and the Teams Workflows URL, read by the Function App through
// Key Vault references with its managed identity (Key Vault Secrets User). A secret is stored, and
// its app setting added, only when a value is given: an endpoint without one answers 503.
param name string
param location string
param tags object
@secure()
param secretValues object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

// App setting name -> Key Vault secret name.
var secretNames = {
  SLACK_SIGNING_SECRET: 'slack-signing-secret'
  SLACK_BOT_TOKEN: 'slack-bot-token'
  TEAMS_OUTGOING_WEBHOOK_SECRET: 'teams-outgoing-webhook-secret'
  TEAMS_WORKFLOWS_URL: 'teams-workflows-url'
  VENDING_CALLBACK_SIGNING_SECRET: 'callback-signing-secret'
}
var given = filter(items(secretNames), s => !empty(secretValues[s.key]))

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for s in given: {
  parent: vault
  name: s.value
  properties: { value: secretValues[s.key] }
}]

output name string = vault.name
output id string = vault.id
@description('App settings that read each given secret through a Key Vault reference.')
output references object = toObject(given, s => s.key, s => '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${s.value}/)')
