from __future__ import annotations

from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from . import views

urlpatterns = [
    path("auth/login/", views.LoginView.as_view()),
    path("auth/logout/", views.LogoutView.as_view()),
    path("auth/token/", obtain_auth_token),
    path("auth/me/", views.MeView.as_view()),
    path("categories/", views.CategoryList.as_view()),
    path("products/", views.ProductList.as_view()),
    path("products/<int:pk>/", views.ProductDetail.as_view()),
    path("cart/", views.CartView.as_view()),
    path("cart/items/", views.CartItems.as_view()),
    path("cart/items/<int:pk>/", views.CartItemDetail.as_view()),
    path("checkout/", views.CheckoutView.as_view()),
    path("orders/", views.OrderList.as_view()),
]
