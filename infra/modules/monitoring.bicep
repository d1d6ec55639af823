// Log Analytics and workspace-based Application Insights with local authentication off: the app
// sends telemetry with its managed identity (Monitoring Metrics Publisher), never with a key.
// The operators' workbook (monitoring-workbook.json, the queries of docs/monitoring.md) is here too.
param logAnalyticsName string
param appInsightsName string
param location string
param tags object

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsights.id, 'workspace-vending-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Workspace Vending'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: loadTextContent('../monitoring-workbook.json')
  }
}

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
output connectionString string = appInsights.properties.ConnectionString
output logAnalyticsId string = logs.id
