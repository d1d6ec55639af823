// Key Vault for the chat secrets and the Teams Workflows URL, read by the Function App through
// Key Vault references with its managed identity (Key Vault Secrets User). A secret is stored, and
// its app setting added, only when a value is given: an endpoint without one answers 503.
//
// And the callback signing secret: one per deployment, which the app reads itself with the
// identity (VENDING_CALLBACK_SIGNING_SECRET_URI, adapters/secrets.py). Bicep has no random function
// outside a parameter's default (newGuid(): https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-string#newguid),
// and every deployment evaluates that default anew, while writing a Key Vault secret always makes
// a new version of it. So the secret is written only when it is first created (or when the
// operator gives a value): `callbackSigningSecretExists` comes back true from the azd environment
// (main.bicep outputs it) on every later `azd provision`, and the secret is left alone.
param name string
param location string
param tags object
@secure()
param secretValues object
@secure()
@description('A callback signing secret the operator chose; empty: one is generated on the first deployment.')
param callbackSigningSecret string = ''
@secure()
@description('The generated value, used only when the secret is first created.')
param callbackSigningSeed string
@description('True once the callback signing secret exists: it is then not written again (not rotated).')
param callbackSigningSecretExists bool = false

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
}
var given = filter(items(secretNames), s => !empty(secretValues[s.key]))

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for s in given: {
  parent: vault
  name: s.value
  properties: { value: secretValues[s.key] }
}]

var callbackSecretName = 'callback-signing-secret'

// Microsoft.KeyVault/vaults/secrets: https://learn.microsoft.com/azure/templates/microsoft.keyvault/vaults/secrets
resource callbackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(callbackSigningSecret) || !callbackSigningSecretExists) {
  parent: vault
  name: callbackSecretName
  properties: {
    value: empty(callbackSigningSecret) ? callbackSigningSeed : callbackSigningSecret
    contentType: 'HMAC-SHA256 key for X-Vending-Signature'
  }
}

output name string = vault.name
output id string = vault.id
@description('App settings that read each given secret through a Key Vault reference.')
output references object = toObject(given, s => s.key, s => '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${s.value}/)')
@description('Where the app reads the callback signing secret (its current version).')
output callbackSigningSecretUri string = '${vault.properties.vaultUri}secrets/${callbackSecretName}'
