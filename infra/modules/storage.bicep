// The Function App's storage account: host storage (blobs, queues), the deployment package
// container, and the state tables of adapters/tables_store.py. Shared-key access is off: every
// client authenticates with Microsoft Entra ID.
param name string
param location string
param tags object
@description('The state tables: <prefix>requests, <prefix>index, <prefix>events (adapters/tables_store.py).')
param tablePrefix string = 'vending'
param deploymentContainerName string

var tableNames = ['${tablePrefix}requests', '${tablePrefix}index', '${tablePrefix}events']

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }

  resource blobs 'blobServices' = {
    name: 'default'
    resource deployment 'containers' = {
      name: deploymentContainerName
      properties: { publicAccess: 'None' }
    }
  }

  resource tableService 'tableServices' = {
    name: 'default'
    resource tables 'tables' = [for table in tableNames: {
      name: table
    }]
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output tableNames array = tableNames
