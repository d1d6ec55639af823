// The one user-assigned identity the Function App uses for every connection (storage, tables,
// Service Bus, Key Vault references, Application Insights, and Azure Resource Manager).
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
