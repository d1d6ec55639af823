// The Function App on the Flex Consumption plan, Python 3.11, running as the user-assigned
// identity for every connection: no connection string and no key in its settings. Each setting
// the code reads (models/settings.py) is set here or listed as optional in docs/deploy.md
// (tests/unit/test_infra.py checks both).
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string
param deploymentContainerName string
param serviceBusNamespace string
param appInsightsConnectionString string
@description('App settings holding Key Vault references (chat secrets, Workflows URL, callback key).')
param secretReferences object
param tablePrefix string = 'vending'
param maximumInstanceCount int = 40
param queues object = { onboarding: 'onboarding', steps: 'steps', notifications: 'notifications' }

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

var settings = {
  // Host storage, identity-based.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  // The state store: Azure Tables in the same account.
  VENDING_STORE: 'tables'
  TablesConnection__tableServiceUri: storageTableEndpoint
  TablesConnection__credential: 'managedidentity'
  TablesConnection__clientId: identityClientId
  VENDING_TABLES_PREFIX: tablePrefix
  // The bus: Service Bus, for the triggers (host) and for sending (the code).
  VENDING_BUS: 'servicebus'
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  OnboardingQueueName: queues.onboarding
  StepsQueueName: queues.steps
  NotificationsQueueName: queues.notifications
  VENDING_BUS_LOCK_S: '60'
  VENDING_BUS_MAX_DELIVERIES: '10'
  VENDING_BUS_DUPLICATE_WINDOW_S: '600'
  SweepSchedule: '0 */1 * * * *'
  DeadLetterSchedule: '0 */5 * * * *'
  // Azure Resource Manager, as the same identity.
  VENDING_CLOUD: 'azure'
  AZURE_CLIENT_ID: identityClientId
  VENDING_DATA_DIR: '/tmp/vending'
  // Telemetry, authenticated with the identity (local auth is off on Application Insights).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: { minTlsVersion: '1.2', ftpsState: 'Disabled' }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identityId }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(settings, secretReferences)
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
